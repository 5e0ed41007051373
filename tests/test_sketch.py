"""The run id sketch: exact differences of id sets, compact stable text, clear errors."""

import base64
import os
import random
import string
import subprocess
import sys
import zlib

import pytest

from tap_wandb.sketch import MAX_ID_BYTES, RunIdSketch


def random_ids(rng: random.Random, count: int, length: int = 8) -> list[str]:
    """Distinct W&B-style run ids: `length` characters of [a-z0-9]."""
    ids: set[str] = set()
    while len(ids) < count:
        ids.add("".join(rng.choices(string.ascii_lowercase + string.digits, k=length)))
    return sorted(ids)


def test_text_round_trip_keeps_the_sketch() -> None:
    ids = random_ids(random.Random(1), 300)
    sketch = RunIdSketch.of(ids)
    text = sketch.to_text()
    again = RunIdSketch.from_text(text)
    assert again == sketch
    assert again.to_text() == text
    assert again.difference(RunIdSketch.of(ids[5:])) == (set(ids[:5]), set())


def test_text_round_trip_keeps_negative_counts() -> None:
    # Removing ids never added leaves negative counts; the text must keep their sign.
    sketch = RunIdSketch.of(["kept"])
    for run_id in ("gone1", "gone2", "gone3"):
        sketch.remove(run_id)
    again = RunIdSketch.from_text(sketch.to_text())
    assert again == sketch
    assert again.difference(RunIdSketch.of(["kept"])) == (set(), {"gone1", "gone2", "gone3"})


def test_text_is_json_safe_ascii() -> None:
    text = RunIdSketch.of(["ünïcode", "abc12345"]).to_text()
    assert text.isascii()
    assert not set(text) & set('"\\\n\r\t ')


def test_text_is_the_same_in_another_process() -> None:
    # Python's str hash is salted per process; the sketch must not depend on it.
    ids = ["run-a", "b2", "c3x9", "ü"]
    code = (
        "from tap_wandb.sketch import RunIdSketch; "
        f"print(hash('run-a')); print(RunIdSketch.of({ids!r}).to_text())"
    )
    seed = str(hash("run-a") % 1000 + 1)  # any seed but this process's
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.getcwd()}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    other_hash, other_text = result.stdout.split()
    assert int(other_hash) != hash("run-a")
    assert other_text == RunIdSketch.of(ids).to_text()


def test_add_then_remove_leaves_an_empty_sketch() -> None:
    ids = random_ids(random.Random(2), 100)
    sketch = RunIdSketch()
    for run_id in ids:
        sketch.add(run_id)
    assert sketch != RunIdSketch()
    for run_id in reversed(ids):
        sketch.remove(run_id)
    assert sketch == RunIdSketch()
    assert sketch.to_text() == RunIdSketch().to_text()
    assert sketch.difference(RunIdSketch()) == (set(), set())


def test_identical_sets_have_no_difference() -> None:
    ids = random_ids(random.Random(3), 1000)
    assert RunIdSketch.of(ids).difference(RunIdSketch.of(ids)) == (set(), set())


@pytest.mark.parametrize("deleted", [0, 1, 2, 5, 10, 20])
@pytest.mark.parametrize("new", [0, 1, 3, 10])
def test_difference_finds_deleted_and_new_ids_exactly(deleted: int, new: int) -> None:
    rng = random.Random(deleted * 100 + new)
    ids = random_ids(rng, 200 + new)
    synced, listed_only = ids[:200], ids[200:]
    gone = set(rng.sample(synced, deleted))
    listed = [run_id for run_id in synced if run_id not in gone] + listed_only
    rng.shuffle(listed)
    result = RunIdSketch.of(synced).difference(RunIdSketch.of(listed))
    assert result == (gone, set(listed_only))


def test_difference_is_exact_for_mixed_unicode_and_lengths() -> None:
    long_ascii = "x" * MAX_ID_BYTES
    long_unicode = "é" * (MAX_ID_BYTES // 2)  # 2 bytes each in UTF-8
    odd = [
        "a",
        "a\x00",  # differs from "a" only by a trailing NUL: the length must tell them apart
        "",
        "ab",
        "ünïcödé-run",
        "实验-42",
        "🚀🔥",
        "e\u0301",  # combining accent: not normalised, kept as given
        long_ascii,
        long_unicode,
        "550e8400-e29b-41d4-a716-446655440000",
    ]
    common = random_ids(random.Random(4), 200)
    deleted, new = set(odd[::2]), set(odd[1::2])
    old = RunIdSketch.of(common + sorted(deleted))
    current = RunIdSketch.of(common + sorted(new))
    assert old.difference(current) == (deleted, new)
    assert current.difference(old) == (new, deleted)


def test_ids_over_the_byte_limit_are_rejected() -> None:
    sketch = RunIdSketch()
    with pytest.raises(ValueError, match="longer than the sketch's limit of 255"):
        sketch.add("x" * (MAX_ID_BYTES + 1))
    with pytest.raises(ValueError, match="256 UTF-8 bytes"):
        sketch.add("é" * 128)
    with pytest.raises(TypeError, match="must be a string"):
        sketch.add(12345678)  # type: ignore[arg-type]
    assert sketch == RunIdSketch()


def test_too_many_differences_give_none() -> None:
    rng = random.Random(5)
    ids = random_ids(rng, 400)
    assert RunIdSketch.of(ids[:300]).difference(RunIdSketch.of(ids[100:])) is None


def test_difference_is_never_wrong_only_undecodable() -> None:
    # Around and beyond capacity (about 60 ids for 80 cells) decoding fails often; each result
    # must then be None or the exact answer, never a wrong id.
    rng = random.Random(6)
    decoded = failed = 0
    for trial in range(80):
        size = 50 + trial % 50
        ids = random_ids(rng, size + 5)
        common, differing = ids[size:], ids[:size]
        cut = rng.randint(0, size)
        deleted, new = differing[:cut], differing[cut:]
        result = RunIdSketch.of(deleted + common).difference(RunIdSketch.of(new + common))
        if result is None:
            failed += 1
        else:
            decoded += 1
            assert result == (set(deleted), set(new))
    assert decoded and failed


def test_different_cell_counts_cannot_be_compared() -> None:
    with pytest.raises(ValueError, match="80 and 120 cells"):
        RunIdSketch.of(["a"]).difference(RunIdSketch.of(["a"], cells=120))


@pytest.mark.parametrize("cells", [0, 2, 1 << 17])
def test_cell_count_out_of_range_is_rejected(cells: int) -> None:
    with pytest.raises(ValueError, match="cells must be between"):
        RunIdSketch(cells)


def test_insertion_order_does_not_matter() -> None:
    rng = random.Random(7)
    ids = random_ids(rng, 500)
    shuffled = ids[:]
    rng.shuffle(shuffled)
    one_by_one = RunIdSketch()
    for run_id in shuffled:
        one_by_one.add(run_id)
    assert one_by_one == RunIdSketch.of(ids)
    assert one_by_one.to_text() == RunIdSketch.of(reversed(ids)).to_text()


def test_of_counts_repeated_ids_once() -> None:
    assert RunIdSketch.of(["a", "b", "a"]) == RunIdSketch.of(["a", "b"])


def test_text_of_5000_ids_stays_small() -> None:
    ids = random_ids(random.Random(8), 5000)
    assert len(RunIdSketch.of(ids).to_text()) < 4096


def corrupt_texts() -> list[tuple[str, str]]:
    good = RunIdSketch.of(random_ids(random.Random(9), 50)).to_text()
    raw = base64.b64decode(good)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    body = b"\x00" * 10
    unchecked = bytes([1, 0]) + body + zlib.crc32(body[:5]).to_bytes(4, "little")
    return [
        ("", "too short"),
        ("not base64!", "not base64"),
        ("ünï", "not base64"),
        (good[:-8], "corrupt"),
        (base64.b64encode(bytes(flipped)).decode(), "corrupt"),
        (base64.b64encode(bytes([2]) + raw[1:]).decode(), "format version 2"),
        (base64.b64encode(bytes([1, 0x80]) + raw[2:]).decode(), "unknown flags"),
        (base64.b64encode(unchecked).decode(), "checksum mismatch"),
    ]


@pytest.mark.parametrize(("text", "message"), corrupt_texts())
def test_corrupt_text_raises_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunIdSketch.from_text(text)

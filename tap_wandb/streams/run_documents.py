"""GraphQL documents of the runs listing and of what hangs off a run (artifacts, system
metrics), with only fields and arguments the official client (wandb 0.31.0) itself selects.

A runs page carries each run's first page of artifacts and its system-metrics sample, each
behind an ``@include`` that is false when no selected stream needs it: a deselected stream
adds no field to the reply and no request.
"""

from __future__ import annotations

import re
from textwrap import dedent

# The artifact fields the tap reads, from the client's ArtifactFragment (RunOutputArtifacts).
ARTIFACT_FRAGMENTS = dedent("""
    fragment ArtifactPage on ArtifactConnection {
      pageInfo {
        endCursor
        hasNextPage
      }
      edges {
        node {
          ...ArtifactVersion
        }
      }
    }

    fragment ArtifactVersion on Artifact {
      id
      artifactSequence {
        name
        project {
          name
          entity {
            name
          }
        }
      }
      versionIndex
      artifactType {
        name
      }
      description
      metadata
      tags {
        name
      }
      historyStep
      state
      size
      digest
      fileCount
      createdAt
      updatedAt
      aliases {
        alias
        artifactCollection {
          name
          project {
            name
            entity {
              name
            }
          }
        }
      }
    }
""")

# One page of runs with config, summary and history bounds, so no request per run is needed;
# with each run's first page of logged and used artifacts and its system-metrics sample when
# those streams are selected. runCount is asked for on the first page only (progress logs).
RUNS = (
    dedent("""
    query Runs(
      $entity: String!
      $project: String!
      $filters: JSONString
      $order: String
      $first: Int
      $after: String
      $withCount: Boolean!
      $withArtifacts: Boolean!
      $artifactsFirst: Int
      $withSystemMetrics: Boolean!
      $systemMetricsSamples: Int
    ) {
      project(name: $project, entityName: $entity) {
        runCount(filters: $filters) @include(if: $withCount)
        runs(filters: $filters, order: $order, first: $first, after: $after) {
          edges {
            cursor
            node {
              id
              name
              displayName
              state
              createdAt
              heartbeatAt
              updatedAt
              tags
              group
              jobType
              sweepName
              commit
              notes
              description
              historyLineCount
              user {
                username
              }
              config
              summaryMetrics
              systemMetrics
              historyKeys
              outputArtifacts(first: $artifactsFirst) @include(if: $withArtifacts) {
                ...ArtifactPage
              }
              inputArtifacts(first: $artifactsFirst) @include(if: $withArtifacts) {
                ...ArtifactPage
              }
              events(samples: $systemMetricsSamples) @include(if: $withSystemMetrics)
            }
          }
          pageInfo {
            endCursor
            hasNextPage
          }
        }
      }
    }
""")
    + ARTIFACT_FRAGMENTS
)
# For servers without Run.updatedAt (change_detection: off): the run's is the first in the
# document (artifacts keep theirs).
RUNS_WITHOUT_UPDATED_AT = re.sub(r"\n +updatedAt\n", "\n", RUNS, count=1)

# The fields of a run node that belong to its child streams, not to the run itself.
RUN_CHILD_FIELDS = ("outputArtifacts", "inputArtifacts", "events")

# Every run's id, and nothing else, to find the runs W&B deleted.
RUN_IDS = dedent("""
    query RunIds(
      $entity: String!
      $project: String!
      $filters: JSONString
      $first: Int
      $after: String
    ) {
      project(name: $project, entityName: $entity) {
        runs(filters: $filters, order: "+created_at", first: $first, after: $after) {
          edges {
            cursor
            node {
              name
            }
          }
          pageInfo {
            endCursor
            hasNextPage
          }
        }
      }
    }
""")
RUN_IDS_PAGE_SIZE = 500


def _run_artifacts(connection: str) -> str:
    """One run's artifacts of one direction, a page at a time (as the client reads them)."""
    return (
        dedent(f"""
    query RunArtifacts(
      $entity: String!
      $project: String!
      $run: String!
      $first: Int
      $after: String
    ) {{
      project(name: $project, entityName: $entity) {{
        run(name: $run) {{
          artifacts: {connection}(first: $first, after: $after) {{
            ...ArtifactPage
          }}
        }}
      }}
    }}
""")
        + ARTIFACT_FRAGMENTS
    )


# For a run with more artifacts than one page of the listing holds.
RUN_ARTIFACTS = {
    "logged": _run_artifacts("outputArtifacts"),
    "used": _run_artifacts("inputArtifacts"),
}
ARTIFACTS_PAGE_SIZE = 100  # as the client's run.logged_artifacts()

# One run's system-metrics sample, for a run whose listing did not carry it.
RUN_EVENTS = dedent("""
    query RunEvents($entity: String!, $project: String!, $run: String!, $samples: Int) {
      project(name: $project, entityName: $entity) {
        run(name: $run) {
          events(samples: $samples)
        }
      }
    }
""")

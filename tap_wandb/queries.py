"""GraphQL documents, selecting only fields and arguments W&B is known to have.

Every field here is one the official client (wandb 0.31.0) itself selects, so the tap depends
on nothing the real API might lack.
"""

from textwrap import dedent

VIEWER = dedent("""
    query Viewer {
      viewer {
        id
        entity
        username
      }
    }
""")

# An entity's projects. With $details (the projects stream is selected) each node also holds
# what that stream emits, so the list the runs need is its only request.
PROJECTS = dedent("""
    query Projects($entity: String!, $first: Int!, $after: String, $details: Boolean!) {
      models(entityName: $entity, first: $first, after: $after) {
        edges {
          node {
            name
            entityName
            ...ProjectDetails @include(if: $details)
          }
        }
        pageInfo {
          endCursor
          hasNextPage
        }
      }
    }

    fragment ProjectDetails on Project {
      id
      createdAt
      isBenchmark
      user {
        username
      }
    }
""")

PARQUET_HISTORY = dedent("""
    query RunParquetHistory($entity: String!, $project: String!, $run: String!) {
      project(name: $project, entityName: $entity) {
        run(name: $run) {
          parquetHistory(liveKeys: ["_step"]) {
            parquetUrls
            liveData
          }
        }
      }
    }
""")

# minStep is inclusive, maxStep exclusive; samples >= the window width returns every row.
HISTORY_WINDOW = dedent("""
    query HistoryPage(
      $entity: String!
      $project: String!
      $run: String!
      $minStep: Int64!
      $maxStep: Int64!
      $samples: Int!
    ) {
      project(name: $project, entityName: $entity) {
        run(name: $run) {
          history(minStep: $minStep, maxStep: $maxStep, samples: $samples)
        }
      }
    }
""")

SAMPLED_HISTORY = dedent("""
    query SampledHistory($entity: String!, $project: String!, $run: String!, $samples: Int!) {
      project(name: $project, entityName: $entity) {
        run(name: $run) {
          history(samples: $samples)
        }
      }
    }
""")

"""Load a Synthea CSV export (any version 2.x-4.x) into the warehouse's `raw.<table>` tables.

Two phases, both in DuckDB SQL (no table ever passes through pandas or Python rows):

1. landing (schema `landing`, internal): every new or changed patients file is parsed once
   with `read_csv` and explicit column types into its own table `landing.patients__<id>`
   (raw.patients is rebuilt from them, since duplicates are judged across files); lines
   DuckDB cannot parse go to `landing.rejects`. Files whose path and sha256 are unchanged
   are not read again; vanished files are forgotten.
2. update (one transaction, so a failure leaves the previous raw/meta tables intact):
   raw.patients is rebuilt when its files changed; in every other raw table the rows of
   vanished or changed files leave, and new or changed files are parsed straight into raw
   (no landing copy): their rows get their line numbers, then the rows that fail a check
   (missing required value, unknown patient) move to the quarantine. Rows of unknown
   patients are also kept in `landing.<table>__held`, and when raw.patients changed,
   records of patients that left move to the quarantine (and held) while held records of
   patients that arrived enter raw. `meta.quarantine`, `meta.ingest_manifest` and
   `meta.source_tables` change with them.

So a growing export ingested run by run ends with the same tables as one ingest of the
final export, without rewriting the big tables at each run. See docs/ingest.md.

One module per concern, each importing only the ones above it in this list:
`discover` (the export's files and headers), `digests` (sha256 and line statistics),
`tables` (the meta and landing tables, quoting, transaction, guarded INSERT), `checks`
(the row checks' SQL), `parse` (one file into a table, line numbers, row accounting),
`landing` (phase 1), `plan` (what each raw table gives up and takes in), `direct` (phase 2
for the files parsed straight into raw), `update` (phase 2), `summary` (meta.source_tables
and the IngestSummary), `run` (`ingest_export`). This package exposes the names other
modules use.
"""

from pipelines.ingest.digests import digest_files, file_digest, text_line_stats
from pipelines.ingest.discover import Export, SourceFile, discover_export, display_name, read_header
from pipelines.ingest.parse import DATE_TYPES
from pipelines.ingest.run import ingest_export
from pipelines.ingest.summary import IngestSummary, table_note
from pipelines.ingest.tables import META_DDL, OBSERVATION_PERIODS_DDL

__all__ = [
    "DATE_TYPES",
    "META_DDL",
    "OBSERVATION_PERIODS_DDL",
    "Export",
    "IngestSummary",
    "SourceFile",
    "digest_files",
    "discover_export",
    "display_name",
    "file_digest",
    "ingest_export",
    "read_header",
    "table_note",
    "text_line_stats",
]

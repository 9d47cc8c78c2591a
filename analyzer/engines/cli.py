"""``jitrace clickhouse install-facts URL``: store the analysis' facts in an existing ``otel_traces`` table.

Each fact of queries/clickhouse/span_facts.sql becomes a MATERIALIZED column (ClickHouse computes it as rows are
inserted), with a skip index on ``denied``; the rows already stored get them by a mutation (the equivalent of
``jitrace collect``'s compaction), unless ``--no-backfill``. ``jitrace analyze`` then reads the columns instead of
parsing the attribute maps.
"""

from __future__ import annotations

import argparse
import sys

from jitrace.analyzer.engines import otel_traces
from jitrace.analyzer.engines.clickhouse import engine_errors, parse_url
from jitrace.analyzer.errors import OK, UserError
from jitrace.analyzer.outputs.report import printable


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = sub.add_parser("install-facts", help="add the facts to otel_traces as MATERIALIZED columns",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    install.add_argument("url", metavar="URL",
                         help="clickhouse://USER@HOST:8123/DB?table=otel_traces or chdb:///PATH?table=otel_traces")
    install.add_argument("--no-backfill", action="store_true",
                         help="only rows inserted from now on get the facts (no mutation over the stored rows)")
    install.add_argument("--quiet", action="store_true", help="no progress")


def run(args: argparse.Namespace) -> int:
    source = parse_url(args.url)
    engine = source.connect()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"jitrace clickhouse: {printable(message)}", file=sys.stderr, flush=True)

    try:
        added = otel_traces.install_facts(engine, source.database, source.table, materialize=not args.no_backfill,
                                          say=say)
    except engine_errors() as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(printable(f"{engine.where}: install-facts failed: {text[:500]}")) from None
    finally:
        engine.close()
    if not added:
        say(f"{source.database}.{source.table} already holds every fact")
    return OK

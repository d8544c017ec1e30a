"""Handlers of the inbox example.

`summarise` reads S3-style records exactly as an S3 -> Lambda handler would.
"""

import csv
import os
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


def summarise(event, context):
    rows = list(event["rows"])
    sources = []
    for record in event["records"]:
        bucket = record["s3"]["bucket"]["name"]  # the watched folder's name
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        with open(os.path.join(HERE, bucket, key), newline="", encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
        sources.append(key)
        context.logger.info(
            "read %s (%s bytes, etag %s)", key, record["s3"]["object"]["size"], record["s3"]["object"]["eTag"]
        )
    return {"sources": sources, "rows": len(rows), "columns": sorted({k for r in rows for k in r})}


def report(event, context):
    s = event["summary"]
    columns = ", ".join(s["columns"]) or "-"
    return f"{s['rows']} rows with columns {columns} from {s['sources'] or 'a webhook'}"

"""DuckDB peer for funnel-bench: CSV → Parquet (untimed), then the funnel counts and first-touch
and linear attribution in SQL over the Parquet file (timed, `reps` times). Prints JSON."""
import json
import sys
import time

import duckdb

csv, parquet, reps, funnel_sql, attribution_sql = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
con = duckdb.connect()
con.execute(f"COPY (SELECT * FROM read_csv('{csv}', header = true, all_varchar = false)) TO '{parquet}' (FORMAT parquet)")
secs = []
for _ in range(reps):
    started = time.perf_counter()
    con.execute(f"CREATE OR REPLACE TEMP VIEW events AS SELECT * FROM read_parquet('{parquet}')")
    funnel = con.execute(funnel_sql).fetchone()
    attribution = con.execute(attribution_sql).fetchall()
    secs.append(time.perf_counter() - started)
print(json.dumps({"secs": secs, "funnel": [int(v) for v in funnel],
                  "attribution": [[c, int(f), int(l)] for c, f, l in attribution]}))

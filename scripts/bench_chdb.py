"""chDB peer for funnel-bench: CSV → Parquet (untimed), then one period-count question per
window over the Parquet file, each timed on its own. Prints JSON: [[seconds, [7 counts]], ...]."""
import json
import sys
import time

import chdb
import pyarrow.csv
import pyarrow.parquet

csv, parquet, windows_file, sql = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
pyarrow.parquet.write_table(pyarrow.csv.read_csv(csv), parquet)
source = f"file('{parquet}', Parquet)"
answers = []
for lo, hi in json.load(open(windows_file)):
    query = sql.replace("FROM events", f"FROM {source}").replace("{from}", str(lo)).replace("{to}", str(hi))
    started = time.perf_counter()
    counts = chdb.query(query, "CSV").bytes().decode().strip().split(",")
    answers.append([time.perf_counter() - started, [int(c) for c in counts]])
print(json.dumps(answers))

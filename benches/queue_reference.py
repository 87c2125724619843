"""The reference for `sweeper bench queue`: the same claim + complete loop in Python's
sqlite3, on the same kind of table (WAL, busy_timeout, one-statement claim).

    python benches/queue_reference.py --jobs 2000 --workers 4

Prints {"jobs_per_second": ...}. Each worker is a process with its own connection.
"""

import argparse
import json
import multiprocessing
import os
import sqlite3
import tempfile
import time
import uuid

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def connect(path):
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create(path, jobs):
    conn = connect(path)
    conn.execute(
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'queued',
            priority INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0,
            worker TEXT, lease_expires_at TEXT, heartbeat_at TEXT, started_at TEXT,
            finished_at TEXT, result TEXT,
            run_after TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"""
    )
    conn.execute("CREATE INDEX jobs_claim ON jobs (state, priority DESC, id)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO jobs (id) VALUES (?)", [(str(uuid.uuid4()),) for _ in range(jobs)])
    conn.execute("COMMIT")
    conn.close()


def work(path, name, done):
    conn = connect(path)
    claim = f"""UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = ?,
        lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+60 seconds'),
        heartbeat_at = {NOW}, started_at = {NOW}
        WHERE state = 'queued' AND id = (SELECT id FROM jobs WHERE state = 'queued'
            AND run_after <= {NOW} ORDER BY priority DESC, id LIMIT 1)
        RETURNING id, attempt"""
    complete = f"""UPDATE jobs SET state = 'succeeded', result = '{{}}', finished_at = {NOW},
        lease_expires_at = NULL WHERE id = ? AND attempt = ? AND state = 'running'"""
    count = 0
    while True:
        row = conn.execute(claim, (name,)).fetchone()
        if row is None:
            break
        conn.execute(complete, row)
        count += 1
    done.put(count)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reference.db")
        create(path, args.jobs)
        done = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(target=work, args=(path, f"w{i}", done))
            for i in range(args.workers)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        total = sum(done.get() for _ in workers)
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - started
    assert total == args.jobs, (total, args.jobs)
    print(json.dumps({"jobs": total, "workers": args.workers, "seconds": seconds,
                      "jobs_per_second": total / seconds}))


if __name__ == "__main__":
    main()

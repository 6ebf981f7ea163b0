-- Pre-queued rows for a claim run (psycopg placeholders: run by the harness, not pgbench).
INSERT INTO bench_jobs (args) SELECT '[]' FROM generate_series(1, %(rows)s);

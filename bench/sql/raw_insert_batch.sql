-- enqueue: (nothing) -> ready, :batch rows in one statement and one transaction.
INSERT INTO bench_jobs (args) SELECT '[]' FROM generate_series(1, :batch);

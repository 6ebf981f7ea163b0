-- claim: ready -> running, up to :batch rows in one transaction; SKIP LOCKED lets concurrent
-- clients take disjoint rows.
WITH claimed AS (
    UPDATE bench_jobs SET state = 'running', claimed_at = now()
    WHERE id IN (
        SELECT id FROM bench_jobs
        WHERE queue = 'default' AND state = 'ready'
        ORDER BY id
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
-- complete: running -> done, the same rows in a second transaction (as after running them).
UPDATE bench_jobs SET state = 'done', finished_at = now() WHERE id = ANY (:ids::bigint[]);

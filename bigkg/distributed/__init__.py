"""Multi-worker training: the bucket lock server in the c10d Store, the distributed
scheduler, process-group setup, partition exchange and shared-parameter sync."""

"""The on-disk format of a collection: run folders, one journal per running run, compaction,
and the catalog of finished runs (see README's "On-disk format").

::

    my_study.collection/
      collection.json                  format version and collection id
      numbering.lock                   held while a run takes its experiment number, and by recovery
      active/<run id>                  a marker per run that may be running
      runs/<run id>/run.json           bookkeeping: number, status, times, pid, host (atomic rewrite)
      runs/<run id>/heartbeat          touched at every flush while the run records
      runs/<run id>/lock-<session>     flock-ed by the session's writer while it records
      runs/<run id>/journal/*.rrj      the running run's framed, checksummed journal
      runs/<run id>/records-<n>.parquet  the compacted run, named in run.json
      catalog/pack-<id>[.runs].parquet   a cache: small finished runs gathered, one pack per schema
"""

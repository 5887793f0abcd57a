"""Per-subject fractal fingerprint jobs and cohort comparisons (the ``fmx fingerprint`` commands).

One module per concern:

- :mod:`fmx.fingerprint.discover`   find recordings: BIDS-like folders, manifests, RR cohort files
- :mod:`fmx.fingerprint.config`     the Hydra group ``conf/fingerprint`` and the resume hash
- :mod:`fmx.fingerprint.recording`  read, preprocess and measure one recording (the Ray task)
- :mod:`fmx.fingerprint.job`        fan-out, resume, failures, cohort tables
- :mod:`fmx.fingerprint.interrupt`  Ctrl-C, SIGTERM and a full disk: a clean stop that says how to continue
- :mod:`fmx.fingerprint.stats`      paired/unpaired tests, effect sizes, BH-FDR and Holm
- :mod:`fmx.fingerprint.compare`    contrasts over a job's output, mixed model, figures
- :mod:`fmx.fingerprint.plots`      cohort, per-channel effect and scalp-map figures
- :mod:`fmx.fingerprint.tracking`   the MLflow run of a job
- :mod:`fmx.fingerprint.storage`    local folders and s3:// prefixes, atomic writes

Entry points: :func:`fmx.fingerprint.job.run_fingerprint_job` and
:func:`fmx.fingerprint.compare.compare` (imported lazily by the CLI; import them from their modules).
"""

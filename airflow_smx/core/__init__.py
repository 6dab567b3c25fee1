"""The plain-Python core: what a cross-validation run *is*, with no Airflow import.

Belongs here: the request model and SMX-Validator's translation (``request``,
``smx_validator``), the deployment's bounds (``policy``), the trigger form's fields (``form``),
per-fold CreateTrainingJob requests (``job_requests``), names (``naming``), statistics and the
result (``results``), ``file://``/``s3://`` storage (``storage``), SageMaker's training-container
contract on this machine (``container``) and the fold engine (``folds``).

May import: the standard library, pydantic, numpy, scikit-learn, fsspec/s3fs, msgspec, and
itself. Never ``airflow``: the ``airflow-smx check|split`` command runs without it, and a test
imports every module here and fails if Airflow was loaded.
"""

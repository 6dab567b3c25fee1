"""The fold training operators, one per backend: ``sagemaker_fold`` (a subclass of the amazon
provider's ``SageMakerTrainingOperator``) and ``local_fold``. They receive user data, so none
declares a templated field. May import Airflow, the amazon provider, ``hooks``, ``triggers``
and ``airflow_smx.core``."""

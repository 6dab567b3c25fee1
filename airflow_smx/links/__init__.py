"""Extra links in the Airflow UI (the amazon provider's ``BaseAwsLink``): a fold task to its
training job and logs, ``aggregate_results`` to the run's report. Registered in the provider
info, as Airflow requires of a link it is to show. May import Airflow and the amazon provider."""

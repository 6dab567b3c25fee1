# Airflow 3 with airflow-smx installed, for docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md constraints.txt /opt/airflow-smx/
COPY --chown=airflow:root airflow_smx /opt/airflow-smx/airflow_smx
# the training script of the local backend's one command ([smx] local_commands in docker-compose.yaml)
COPY --chown=airflow:root examples/train_sklearn.py /opt/airflow-smx/examples/train_sklearn.py
RUN pip install --no-cache-dir --constraint /opt/airflow-smx/constraints.txt /opt/airflow-smx

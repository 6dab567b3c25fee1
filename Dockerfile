# Airflow 3 with airflow-smx installed, for docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md constraints.txt /opt/airflow-smx/
COPY --chown=airflow:root airflow_smx /opt/airflow-smx/airflow_smx
RUN pip install --no-cache-dir --constraint /opt/airflow-smx/constraints.txt /opt/airflow-smx

"""The Airflow side of a cross-validation run: the graph (``graph.cross_validation_dag``) and the
tasks it wires (``tasks``). ``dags/smx_cross_validation.py`` is a few lines that call it.

May import Airflow, ``backends``, ``hooks``, ``operators``, ``settings`` and ``airflow_smx.core``.
"""

"""The Airflow side of a cross-validation run: the graph (``graph.cross_validation_dag``) and the
tasks it wires (``tasks``, and ``split``: the split task, in the worker or as a SageMaker
Processing job). ``dags/smx_cross_validation.py`` is a few lines that call it.

May import Airflow, ``backends``, ``hooks``, ``operators``, ``triggers``, ``settings`` and
``airflow_smx.core``.
"""

"""airflow-smx: k-fold cross-validated training on Amazon SageMaker, orchestrated by Airflow.

Where things are (each package's ``__init__`` says what belongs there and what it may import):
``core`` (plain Python, no Airflow: the request, policy, folds, results), ``backends``
(SageMaker and local behind one interface), ``dag`` (the graph and its tasks), ``operators``,
``triggers``, ``hooks`` (as in the amazon provider), ``cli`` (the commands), ``settings``
(the ``[smx]`` options).
"""

__version__ = "0.1.0"

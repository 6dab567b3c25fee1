"""``python -m airflow_smx``: the same as the ``airflow-smx`` command."""

import sys

from airflow_smx.cli.main import main

sys.exit(main())

"""synthcorpus: Cosmopedia-style synthetic pre-training corpora, orchestrated by Airflow 3.

The stage library under this package knows nothing of Airflow; ``dags/`` only wires stages into tasks.
"""

__version__ = "0.1.0"

"""The Corpora UI: an Airflow plugin (``plugin``: the FastAPI app, its routes and Airflow's auth) over
pages (``pages``) that render what ``data`` reads from storage. Only ``plugin`` imports Airflow."""

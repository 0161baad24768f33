"""The studio backend: REST API, database of runs, Celery configuration and the Python client.

Importing this package stays light: no torch, mujoco, workers, models or frontend.
"""

__version__ = "0.1.0"

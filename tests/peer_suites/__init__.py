"""Peers' own test suites (scikit-learn, SciPy) run against lowrank through adapters.

Not collected by the main suite (no ``test_*.py`` files here); ``dev.py test`` runs them
as a separate step with ``-c tests/peer_suites/pytest.ini``. See README.md here.
"""

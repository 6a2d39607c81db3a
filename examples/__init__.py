"""Bundled examples: the ``example`` tenant ``scriptvisor serve`` runs with no
``--tenants``, and one script per outcome code (``outcomes/``).  Package data,
read through ``importlib.resources``; nothing here is imported.
"""

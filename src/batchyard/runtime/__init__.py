"""Machines on hosts: the layer store, isolation and process supervision.

Nothing here touches the database: the services hand the runtime everything it needs
(layer lists, disk keys) and record what it returns.
"""

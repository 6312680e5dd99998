"""Tessera's data contracts: the config tree, reason codes and the Arrow schemas of every output table."""

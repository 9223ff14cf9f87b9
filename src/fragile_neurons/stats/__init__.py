"""Statistics on plain numbers: curve measures, paired bootstrap intervals, ranking, McNemar and
the significance level. Imports only the running layer."""

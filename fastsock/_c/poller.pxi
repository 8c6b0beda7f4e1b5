# Placeholder until the poller feature lands.
POLLER_ALL = []

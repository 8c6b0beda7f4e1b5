# Placeholder until the socket feature lands.
SOCKET_ALL = []

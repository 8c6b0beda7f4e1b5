# Placeholder until the stream feature lands.
STREAM_ALL = []

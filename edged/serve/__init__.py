"""The ZeroMQ inference service: wire codec, serving core, client, CURVE auth."""

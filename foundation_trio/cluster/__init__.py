"""The cluster layer: links between nodes (``links.py``), their options, handshake,
framing and fault injection; remote processes are built on top of them."""

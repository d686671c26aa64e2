"""The deployment's network stack: what the three processes speak to each other.

Above the protocols in the layering (``ss_engine.comm`` holds the counted ``Channel``
interface the protocols use; this package implements it over the network and adds
everything a deployment needs besides):

* :mod:`.wire`          message format (msgpack header + raw array frames), caps, file frames
* :mod:`.keys`          CurveZMQ key pairs on disk
* :mod:`.zmq_channel`   CurveZMQ contexts, the party<->party channel, a request client
* :mod:`.sealed`, :mod:`.sealed_stream`   the AES-GCM data plane between the servers
* :mod:`.dealer_link`   the parties' side of the dealer process

zmq is imported only here (an import-linter contract keeps it out of the protocols,
layers and tensors).
"""

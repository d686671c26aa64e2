"""Party-to-party channels. zmq is imported only by :mod:`ss_engine.net.zmq_channel`."""
from .channel import Channel, ChannelClosed, ChannelStats, ChannelTimeout, PlannedRound, validate_arrays
from .memory import InMemoryChannel, memory_channel_pair

__all__ = [
    "Channel", "ChannelClosed", "ChannelStats", "ChannelTimeout", "PlannedRound", "validate_arrays",
    "InMemoryChannel", "memory_channel_pair",
]

"""The local runtime's dealer runs a step ahead without changing any result."""
import numpy as np

from ss_engine.encoding import encode
from ss_engine.description import init_params
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.local_train import load_preprocessed
from ss_engine.preprocessing.ahead import AheadDealerLink
from ss_engine.simulate import LocalRuntime
from ss_engine.job import TrainJob
from ss_engine.training import PartyState, train_party


def _train(ahead: bool, loss_every: int, lead_steps: int = 2):
    x, y, _, _ = load_preprocessed("mnist-small", 64, 1)
    rt = LocalRuntime(seed=b"ahead", ahead=ahead)
    if ahead:
        rt.dealer_link.lead_steps = lead_steps
    fx = rt.config.fixed
    p0, p1 = share_arrays({k: encode(v, fx) for k, v in init_params("network-a", 0).items()}, rt._input_prg)
    xs, ys = rt.share_ring(encode_images(x, fx)), rt.share_ring(encode_labels(y, fx))
    job = TrainJob(batch_size=16, epochs=2, loss_every=loss_every)
    st = [PartyState(dict(p0)), PartyState(dict(p1))]
    rt.run(train_party, (xs[0], ys[0], job, st[0]), (xs[1], ys[1], job, st[1]))
    return rt, {k: st[0].params[k] + st[1].params[k] for k in st[0].params}


def test_generating_ahead_changes_nothing_and_hits():
    _, inline_plain = _train(False, 0)
    for loss_every, lead in ((0, 1), (0, 2), (3, 2)):  # 3: every third step asks for more
        rt_a, ahead = _train(True, loss_every, lead)
        inline = inline_plain if loss_every == 0 else _train(False, loss_every)[1]
        assert all(np.array_equal(ahead[k], inline[k]) for k in inline)
        link = rt_a.dealer_link
        assert isinstance(link, AheadDealerLink)
        assert link.hits > 0
        if loss_every == 0:  # 8 identical steps: all but the first were generated ahead
            assert link.hits == 7 * link.misses
        link.close()

"""schedule_updates: each in-place update runs right after the last reader of the buffers it overwrites."""
import numpy as np

import nncc
from nncc import nn
from nncc.ops import get_op
from runtime import optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))


def test_updates_follow_their_last_reader_and_precede_unrelated_work():
    step = nncc.compile(Net(), input_shape=(None, 3), loss=nn.CrossEntropyLoss(), optimizer=optim.Adam(lr=0.1))
    nodes = step.program("train").graph.nodes
    for i, node in enumerate(nodes):
        if not get_op(node.op).inplace:
            continue
        donors = {node.inputs[j] for j in get_op(node.op).inplace.values()}
        later_readers = [n for n in nodes[i + 1:] if donors & set(n.inputs)]
        assert not later_readers, f"{node.op} overwrites a buffer that {later_readers[0].op} still reads"
        previous = nodes[i - 1]
        assert donors & set(previous.inputs) or set(previous.outputs) & set(node.inputs) or \
            get_op(previous.op).inplace, f"{node.op} could run earlier than after {previous.op}"
    fc2_update = next(i for i, n in enumerate(nodes) if n.op == "adam_update" and n.inputs[0].name == "fc2.weight")
    assert fc2_update < next(i for i, n in enumerate(nodes) if n.op == "relu_backward")


def test_scheduled_step_matches_reference_updates():
    nncc.manual_seed(0)
    model = Net()
    step = nncc.compile(model, input_shape=(None, 3), loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.5))
    x = np.random.default_rng(0).random((4, 3), np.float32)
    y = np.array([0, 1, 1, 0], np.int64)
    _, grads = step.grad(x, y)
    before = step.state_dict()
    step.train_step(x, y)
    after = step.state_dict()
    for name, g in grads.items():
        np.testing.assert_allclose(after[name], before[name] - 0.5 * g, rtol=1e-5, atol=1e-7)

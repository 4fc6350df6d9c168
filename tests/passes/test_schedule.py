"""The schedule pass: each in-place update runs right after the last reader of the buffers it overwrites; a bias
gradient's sum follows the weight gradient that can take it in."""
import numpy as np
import pytest

import nncc
from nncc import nn
from nncc.ir import parse_graph
from nncc.ops import get_op
from nncc.passes.schedule import schedule_bias_sums
from passes.test_fusion import LINEAR_GRADS  # a linear layer's gradients, the bias's sum first
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


def _order(graph):
    return [n.op + ("ᵀ" if n.attrs.get("transpose_a") else "") for n in graph.nodes]


def test_a_bias_sum_and_its_readers_move_after_the_weight_gradient_that_can_take_it_in():
    graph = schedule_bias_sums(parse_graph(LINEAR_GRADS))
    assert _order(graph) == ["matmul", "matmulᵀ", "sum", "reshape"]



NO_ANCHOR_FOR_IT = [
    # the weight gradient reads x, not gy
    """graph g(%x: f32[N,5], %gy: f32[N,3]) -> (f32[3], f32[5,5]) {
  %0 = sum(%gy) {axes=[0], keepdims=true} : f32[1,3]
  %1 = reshape(%0) {shape=[3]} : f32[3]
  %2 = matmul(%x, %x) {transpose_a=true, transpose_b=false} : f32[5,5]
  return %1, %2
}
""",
    # the weight gradient reads the sum
    """graph g(%gy: f32[N,3]) -> (f32[3], f32[3,3]) {
  %0 = sum(%gy) {axes=[0], keepdims=true} : f32[1,3]
  %1 = reshape(%0) {shape=[3]} : f32[3]
  %2 = mul(%gy, %0) : f32[N,3]
  %3 = matmul(%gy, %2) {transpose_a=true, transpose_b=false} : f32[3,3]
  return %1, %3
}
""",
    # an update in between, which the moved nodes could then read after it overwrote its buffers
    """graph g(%x: f32[N,5], %gy: f32[N,3], %b: f32[3], %m: f32[3], %lr: f64[], %step: f64[]) -> \
(f32[3], f32[3], f32[3,5]) {
  %0 = sum(%gy) {axes=[0], keepdims=true} : f32[1,3]
  %1 = reshape(%0) {shape=[3]} : f32[3]
  %2, %3 = sgd_update(%b, %1, %m, %lr, %step) {dampening=0.0, momentum=0.0, nesterov=false, weight_decay=0.0} \
: f32[3], f32[3]
  %4 = matmul(%gy, %x) {transpose_a=true, transpose_b=false} : f32[3,5]
  return %2, %3, %4
}
""",
]


@pytest.mark.parametrize("text", NO_ANCHOR_FOR_IT)
def test_a_bias_sum_stays_where_no_weight_gradient_can_take_it_in(text):
    graph = parse_graph(text)
    before = list(graph.nodes)
    assert schedule_bias_sums(graph).nodes == before

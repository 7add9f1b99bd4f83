"""Two CPU processes (torchrun + gloo through accelerate) match one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from neurodecode.train import ArrayBatches, TrainConfig, Trainer

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(9, 8)
            self.b = torch.nn.Linear(8, 7)

        def training_step(self, batch, step):
            err = self.b(torch.tanh(self.a(batch["x"]))) - batch["y"]
            return {"loss": (err ** 2).mean()}

    def run(out_file=None, out_dir=None):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((40, 9)).astype(np.float32)
        y = np.sin(x @ rng.standard_normal((9, 7)).astype(np.float32))
        torch.manual_seed(0)
        net = Net()
        cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, device="cpu", log_every=5, checkpoint_every=None,
                          grad_clip=1.0, seed=1)
        result = Trainer(net, cfg, out_dir=out_dir).fit(ArrayBatches({"x": x, "y": y}, 8))
        if out_file is not None:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out_file)
        return net, result

    if __name__ == "__main__":
        import os
        net, result = run(sys.argv[1] if os.environ.get("RANK", "0") == "0" else None)
        assert result.steps == 15, result.steps
        import accelerate
        assert accelerate.PartialState().num_processes == 2
        torch.distributed.destroy_process_group()  # as `neurodecode train` does: no gloo threads left at exit
''')


def test_two_process_ddp_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--standalone",
           str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_file(str(out))

    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_script
    finally:
        sys.path.remove(str(tmp_path))
    net, result = ddp_script.run()
    assert result.steps == 15
    single = net.state_dict()
    for key, value in single.items():
        np.testing.assert_allclose(ddp[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    # and training moved the weights, so the comparison is not vacuous
    torch.manual_seed(0)
    init = ddp_script.Net().state_dict()
    assert not torch.allclose(init["a.weight"], single["a.weight"], atol=1e-3)

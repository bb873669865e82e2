"""MetaQ (``MetaQ-sc``) runner on CPU: MetaQ's own training loop, without its plots.

We call MetaQ's ``load_data`` (its preprocessing: CP10k, log1p, 3,000 HVGs, z-score clipped at 10), its
``MetaQ`` model, ``train_one_epoch`` and ``inference`` exactly as its ``main.run_metaq`` does (Random
codebook init, AdamW 1e-3 / 1e-2, batch 512, seed), and stop after ``--max-epochs`` (MetaQ's
``train_epoch``, default 300) or once ``--time-budget-s`` is spent, whichever comes first (the epochs run are
reported). Its UMAP / compactness plots (an N x N correlation matrix) are not part of the method and are
skipped. It runs in a temporary working directory (MetaQ writes into ``./save``).
"""

from __future__ import annotations

import time

import _runner_io as rio

args = rio.parse_args(
    __doc__,
    [
        ("--max-epochs", {"type": int, "default": 300}),
        ("--time-budget-s", {"type": float, "default": 0.0, "help": "0 = no budget"}),
    ],
)

t0 = time.perf_counter()
import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from importlib.metadata import version  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

os.chdir(tempfile.mkdtemp(prefix="metaq-"))
# MetaQ's modules import each other by bare name (``from main import ...``): put its folder on the path
# without executing its broken package ``__init__``.
sys.path.insert(0, next(iter(importlib.util.find_spec("MetaQ").submodule_search_locations)))
from data_utils import load_data  # noqa: E402
from engine import inference, train_one_epoch  # noqa: E402
from model import MetaQ as MetaQNet  # noqa: E402

random.seed(args.seed)
np.random.seed(args.seed)  # noqa: NPY002 - MetaQ draws from the global generator
torch.manual_seed(args.seed)
margs = argparse.Namespace(
    data_path=[os.path.abspath(args.input)],
    data_type=["RNA"],
    save_name="bench",
    metacell_num=args.n_metacells,
    type_key="cell_type",
    codebook_init="Random",
    train_epoch=args.max_epochs,
    batch_size=512,
    converge_threshold=10,
    random_seed=args.seed,
    device="cpu",
)
adata_list, dl_train, dl_eval, input_dims = load_data(margs)
cells = adata_list[0].obs_names.copy()
net = MetaQNet(input_dims=input_dims, data_types=margs.data_type, entry_num=margs.metacell_num)
optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
device = torch.device("cpu")
loss_rec_his = loss_vq_his = 1e7
stable = 0
epochs_run = 0
stop_reason = f"max epochs {args.max_epochs}"
for epoch in range(margs.train_epoch):
    loss_rec, loss_vq = train_one_epoch(
        model=net,
        data_types=margs.data_type,
        dataloader=dl_train,
        optimizer=optimizer,
        epoch=epoch,
        device=device,
    )
    epochs_run += 1
    if abs(loss_vq_his - loss_vq) <= 1e-5 and abs(loss_rec_his - loss_rec) <= 1e-5:
        stable += 1
        if stable >= margs.converge_threshold:
            stop_reason = "converged"
            break
    else:
        stable = 0
        loss_rec_his, loss_vq_his = loss_rec, loss_vq
    if args.time_budget_s > 0 and time.perf_counter() - t0 > args.time_budget_s:
        stop_reason = f"time budget {args.time_budget_s:.0f} s"
        break
embeds, ids, _, _, _ = inference(model=net, data_types=margs.data_type, data_loader=dl_eval, device=device)
wall = time.perf_counter() - t0
rio.write_outputs(
    args.out,
    cells,
    np.asarray(ids).astype(np.int64),
    wall_s=wall,
    version=version("MetaQ-sc"),
    notes=f"{epochs_run} epochs ({stop_reason})",
)

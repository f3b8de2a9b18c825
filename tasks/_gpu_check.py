import json, os, sys, time
sys.path.insert(0, "tests")
import torch
from test_tasks import fast, SYNTHETIC_TASKS
from loupe_bench.data.synth import generate_world
from loupe_bench.models import create_model
from loupe_bench.tasks.evaluate import evaluate
from loupe_bench.bench.retrieval_metric import retrieval_metric
OUT = os.environ["OUT"]
w = generate_world("/tmp/w", seed=0, size="tiny")
report = {}
for name in ["clip-tiny", "filip-tiny", "loupe-tiny"]:
    m = create_model(name, seed=0)
    specs = [fast(t, splits=["test"]) for t in SYNTHETIC_TASKS]
    t0 = time.time()
    rs = evaluate([m], specs, data_root=w, out_dir=OUT + "/gpu", device="cuda")
    t_gpu = time.time() - t0
    m.to("cpu")
    rc = evaluate([m], specs[:3], data_root=w, out_dir=None, device="cpu")
    cmp = {}
    for a, b in zip(rs[:3], rc):
        cmp[a["task"]["name"]] = {k: [a["metrics"][k]["value"], b["metrics"][k]["value"]] for k in a["metrics"]}
    report[name] = {"gpu_s": t_gpu, "cpu_vs_gpu": cmp,
                    "gpu": {r["task"]["name"]: {k: v["value"] for k, v in r["metrics"].items()} for r in rs}}
    print(name, t_gpu, flush=True)
json.dump(report, open(OUT + "/gpu_report.json", "w"), indent=1)
b = retrieval_metric(repeat=3, device="cpu")
json.dump(b, open(OUT + "/retrieval_metric.json", "w"), indent=1)
print([(f["label"], f["value"]) for f in b["figures"]])

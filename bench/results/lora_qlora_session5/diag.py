import runpy, sys
mode = sys.argv[1]
if mode == "noshare":
    import phikit.tune.dropout as d
    d.share_dropout = lambda *a, **k: 0
elif mode == "foreach":
    import transformers
    orig = transformers.TrainingArguments.__init__
    def init(self, *a, **k):
        k["optim"] = "adamw_torch"
        orig(self, *a, **k)
    transformers.TrainingArguments.__init__ = init
sys.argv = ["lora_qlora.py", "--model-dir", "/tmp/phi4r", "--data", ".devrun/train_e34d18a.jsonl", "--only", "phikit",
            "--pack-tokens", "2048", "--warmup", "--steps", "12", "--json", sys.argv[2]]
runpy.run_path("bench/lora_qlora.py", run_name="__main__")

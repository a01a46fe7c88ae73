import subprocess
import sys


def test_torchvision_timm_and_transformers_import_in_a_fresh_process():
    code = (
        "import transferkit._compat as c; state = c.ensure_torchvision(); "
        "import torchvision, timm, transformers; "
        "from torchvision.transforms import v2; "
        "m = timm.create_model('resnet18', pretrained=False); "
        "print(state)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in ("native", "patched")


def test_cure_is_not_applied_when_torchvision_already_imported():
    code = "import sys; sys.modules['torchvision'] = object(); import transferkit._compat as c; print(c.ensure_torchvision())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "imported", out.stderr[-2000:]

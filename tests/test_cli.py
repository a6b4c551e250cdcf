"""The command line entry point (lit_blind.cli)."""


def test_lit_blind_lists_its_commands(capsys):
    from lit_blind.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("deblur", "demo", "fit", "validate", "test", "predict"))
    assert main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
    assert main([]) == 2 and "commands:" in capsys.readouterr().err


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from lit_blind.cli import main\n"
        "for argv in (['--help'], ['deblur', '--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"

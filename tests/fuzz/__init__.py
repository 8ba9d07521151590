"""The project's fuzz suite: generated hostile or broken inputs run against both CLIs (issue 25, item 7).

    python -m tests.fuzz --cli python --report            # counts per category and outcome, the failing list
    python -m tests.fuzz --cli cpp --report --json out.json
    python -m tests.fuzz --cli cpp                        # exit 1 when any case misbehaves (ctest runs this)

cases.py holds the corpus (categories: bundle, manifest, model, asset, tokens, checkpoint, image, video, numpy,
args), bases.py the valid inputs it starts from, runner.py how one case runs and is judged, forkserver.py the
Python CLI's fork server. tests/test_fuzz.py runs the Python-CLI cases under pytest.
"""

"""Orbax's own messages during a run go to a file, not the terminal (a failed background
write used to print hundreds of traceback lines before the run's one-line error)."""

import gc
import logging
import os
import sys

from jaxlearn.checkpoint import messages


class _RaisesWhenCollected:
    def __del__(self):
        raise RuntimeError("Event loop is closed")  # what Orbax's writer threads leave


def _fail_orbax_save():
    try:
        raise ValueError("RESOURCE_EXHAUSTED: No space left on device")
    except ValueError:
        logging.getLogger("absl").error("Save Finalize thread failed.", exc_info=True)
    _RaisesWhenCollected()
    gc.collect()


def test_absl_errors_and_unraisable_exceptions_go_to_the_file(tmp_path, capfd):
    path = str(tmp_path / "orbax.log")
    absl = logging.getLogger("absl")
    hook, propagate, handlers = sys.unraisablehook, absl.propagate, list(absl.handlers)
    with messages.diverted_to(path) as sink:
        assert not os.path.exists(path) and sink.summary() == ""  # nothing yet, no file
        absl.info("not kept: below WARNING")
        _fail_orbax_save()
    err = capfd.readouterr().err
    assert "Save Finalize" not in err and "Event loop is closed" not in err, err
    text = open(path).read()
    assert "ERROR absl: Save Finalize thread failed." in text
    assert "ValueError: RESOURCE_EXHAUSTED: No space left on device" in text  # the traceback
    assert "RuntimeError: Event loop is closed" in text and "unraisable exception" in text
    assert "below WARNING" not in text
    assert (sink.count, sink.dropped, sink.where) == (2, 0, path)
    assert sink.summary() == f"Orbax's own messages: {path}"
    # everything is put back
    assert sys.unraisablehook is hook and absl.propagate == propagate
    assert absl.handlers == handlers


def test_a_full_disk_falls_back_to_the_temp_folder_then_drops(tmp_path, capfd):
    # the run folder's disk is full (here: the folder is gone) -> the temp folder takes them
    os.makedirs(tmp_path / "tmp")
    gone = str(tmp_path / "gone" / "orbax.log")
    with messages.diverted_to(gone, fallback_dir=str(tmp_path / "tmp")) as sink:
        _fail_orbax_save()
    assert sink.where is not None and sink.where.startswith(str(tmp_path / "tmp"))
    assert "Event loop is closed" in open(sink.where).read() and sink.dropped == 0
    # and nowhere can take them: counted, dropped, nothing raised or printed
    with messages.diverted_to(gone, fallback_dir=str(tmp_path / "none")) as sink:
        _fail_orbax_save()
    assert (sink.count, sink.dropped, sink.where) == (2, 2, None)
    assert sink.summary() == "2 of 2 Orbax message(s) could not be written"
    assert "Event loop is closed" not in capfd.readouterr().err


def test_restored_after_an_error(tmp_path):
    hook = sys.unraisablehook
    try:
        with messages.diverted_to(str(tmp_path / "orbax.log")):
            raise KeyError("boom")
    except KeyError:
        pass
    assert sys.unraisablehook is hook and not (tmp_path / "orbax.log").exists()

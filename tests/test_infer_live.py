"""Live input of tools/infer_video.py and VideoSegmenter.run: a stream URL (an MJPEG-over-HTTP server on the
loopback, run by the test), a camera index, --start / --max-frames, and Ctrl-C: a live source commits what was
segmented, a file leaves OUTPUT.partial."""
import http.server
import json
import os
import signal
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest
from helpers import moving_scene, run_infer_video, write_frame_folder

from lib import VideoSegmenter
from lib.infer.video_io import ImageFolderSource

FRAMES = moving_scene(48, 64)  # 12 RGB frames


class MJPEGServer:
    """``http://127.0.0.1:<port>/stream.mjpg``: FRAMES as multipart JPEGs, then the stream ends; ``forever`` repeats
    them every 20 ms until the client leaves (or 300 frames, so that a test of a broken stop ends), and sends this
    process SIGINT after ``interrupt_after`` frames."""

    def __init__(self, forever=False, interrupt_after=None):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame')
                self.end_headers()
                sent = 0
                try:
                    while sent < (300 if forever else len(FRAMES)):
                        jpeg = cv2.imencode('.jpg', cv2.cvtColor(FRAMES[sent % len(FRAMES)], cv2.COLOR_RGB2BGR))[1]
                        self.wfile.write(b'--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n'
                                         % jpeg.size + jpeg.tobytes() + b'\r\n')
                        self.wfile.flush()
                        sent += 1
                        server.sent = sent
                        if sent == interrupt_after:
                            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
                        if forever:
                            time.sleep(0.02)
                    self.wfile.write(b'--frame--\r\n')
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

            def log_message(self, *args):
                pass

        self.sent = 0
        self.httpd = socketserver.ThreadingTCPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stream():
    servers = []

    def start(**kwargs):
        servers.append(MJPEGServer(**kwargs))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def test_a_stream_with_start_and_max_frames(model_files, stream, tmp_path):
    out = tmp_path / 'out'
    assert run_infer_video(model_files, stream().url, out, '--save-labels', '--video', '--policy', 'fixed:3',
                           '--start', '2', '--max-frames', '5') == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert (summary['start'], summary['frames'], summary['interrupted']) == (2, 5, False)
    assert summary['key_frames'] == [2, 5]  # the input's frame numbers
    assert sorted(os.listdir(out / 'labels')) == [f'{t:06d}.png' for t in range(2, 7)]
    assert cv2.imread(str(out / 'labels' / '000002.png'), cv2.IMREAD_UNCHANGED).shape == (48, 64)


def test_a_stream_that_ends_is_segmented_whole(model_files, stream, tmp_path):
    seg = VideoSegmenter.from_config(*model_files)
    summary = seg.run(stream().url, tmp_path / 'out')
    assert summary['frames'] == len(FRAMES) and not summary['interrupted'] and summary['frames_announced'] is None


def test_ctrl_c_on_a_stream_commits_what_was_segmented(model_files, stream, tmp_path):
    seg = VideoSegmenter.from_config(*model_files)
    out = tmp_path / 'out'
    unhandled = []
    previous = signal.signal(signal.SIGINT, lambda *args: unhandled.append(1))  # if run let it through
    try:
        server = stream(forever=True, interrupt_after=4)
        summary = seg.run(server.url, out, save_labels=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not unhandled and summary['interrupted'] is True
    assert 1 <= summary['frames'] <= server.sent and not os.path.exists(f'{out}.partial')
    assert sorted(os.listdir(out / 'labels')) == [f'{t:06d}.png' for t in range(summary['frames'])]
    assert json.loads((out / 'summary.json').read_text())['interrupted'] is True
    capture = cv2.VideoCapture(str(out / summary['video']))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    assert decoded == summary['frames']


def test_ctrl_c_on_a_file_leaves_the_partial_output(model_files, tmp_path):
    class Interrupted(ImageFolderSource):  # Ctrl-C while the fourth frame is read
        def _read(self):
            for index, item in enumerate(super()._read()):
                if index == 3:
                    raise KeyboardInterrupt
                yield item

    source = Interrupted(write_frame_folder(tmp_path / 'frames', FRAMES))
    out = tmp_path / 'out'
    with pytest.raises(KeyboardInterrupt, match=f'the frames segmented so far are in {out}.partial'):
        VideoSegmenter.from_config(*model_files).run(source, out, save_labels=True)
    assert not out.exists() and len(os.listdir(f'{out}.partial/labels')) == 3


@pytest.mark.parametrize('spec, what', [('99', 'camera 99'), ('http://127.0.0.1:{port}/none.mjpg', 'stream')])
def test_a_dead_live_source_is_a_one_line_error(spec, what, model_files, tmp_path, capsys):
    with socketserver.TCPServer(('127.0.0.1', 0), None) as closed:
        port = closed.server_address[1]  # free again once closed: nothing listens there
    out = tmp_path / 'out'
    assert run_infer_video(model_files, spec.format(port=port), out) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and what in errors[0] and 'cannot be opened or delivers no frames' in errors[0]
    assert not out.exists() and not os.path.exists(f'{out}.partial')


def test_start_and_max_frames_on_a_folder(model_files, tmp_path, capsys):
    folder = write_frame_folder(tmp_path / 'frames', FRAMES)
    out = tmp_path / 'out'
    assert run_infer_video(model_files, folder, out, '--save-labels', '--start', '10', '--max-frames', '5') == 0
    assert sorted(os.listdir(out / 'labels')) == ['000010.png', '000011.png']  # the folder ends after frame 11
    assert run_infer_video(model_files, folder, tmp_path / 'none', '--start', '12') == 1
    assert 'contains no frames after the first 12' in capsys.readouterr().err
    assert np.array_equal(cv2.imread(str(out / 'labels' / '000010.png'), cv2.IMREAD_UNCHANGED).shape, (48, 64))

// emostream capture: the browser's own camera and microphone as binary websocket frames
// (docs/protocol.md, "Browser capture"). Vanilla JS, no dependencies; used by app.js.
//
// One frame per binary message: a 20-byte little-endian header, then the payload.
//   0  "EM"   2  u8 version (1)   3  u8 kind (1 audio PCM s16le mono, 2 video JPEG)
//   4  u32 seq (per kind, from 0)   8  f64 t_ms (performance.now() of the first sample / the frame)
//   16 audio: u32 sample rate | video: u16 width, u16 height
//   20 payload: audio int16 samples (1..max_audio_samples) | video JPEG (<= max_video_bytes)
"use strict";

(function () {
  const HEADER_BYTES = 20;
  const FRAME_VERSION = 1;
  const KIND_AUDIO = 1;
  const KIND_VIDEO = 2;
  const DEFAULTS = { audio_hz: 16000, max_audio_samples: 8000, max_video_bytes: 262144, video_fps: 5 };
  const CHUNK_SAMPLES = 1024;
  const VIDEO_W = 320, VIDEO_H = 240, JPEG_QUALITY = 0.7;
  const MAX_BUFFERED = 1 << 20; // skip video frames while the socket has ~1 MB queued
  const MAX_BUFFERED_AUDIO = 8 << 20; // and audio only when it is hopelessly behind
  const PREROLL_CHUNKS = 24; // ~1.5 s of audio kept while (re)connecting, sent first on attach

  function header(kind, seq, tMs, extra, payloadBytes) {
    const buf = new ArrayBuffer(HEADER_BYTES + payloadBytes);
    const dv = new DataView(buf);
    dv.setUint8(0, 0x45); // "E"
    dv.setUint8(1, 0x4d); // "M"
    dv.setUint8(2, FRAME_VERSION);
    dv.setUint8(3, kind);
    dv.setUint32(4, seq >>> 0, true);
    dv.setFloat64(8, tMs, true);
    extra(dv);
    return buf;
  }
  function audioFrame(seq, tMs, rate, samples) { // samples: Int16Array
    const buf = header(KIND_AUDIO, seq, tMs, (dv) => dv.setUint32(16, rate, true), samples.byteLength);
    new Int16Array(buf, HEADER_BYTES, samples.length).set(samples); // platform order: little-endian everywhere browsers run
    return buf;
  }
  function videoFrame(seq, tMs, width, height, jpeg) { // jpeg: ArrayBuffer
    const buf = header(KIND_VIDEO, seq, tMs, (dv) => { dv.setUint16(16, width, true); dv.setUint16(18, height, true); },
      jpeg.byteLength);
    new Uint8Array(buf, HEADER_BYTES).set(new Uint8Array(jpeg));
    return buf;
  }

  // Why getUserMedia failed, in words a user can act on.
  function explain(err) {
    const name = err && err.name ? err.name : "";
    const secure = "Browsers allow the camera and microphone only on https:// or http://localhost.";
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return "This page is not a secure context (" + location.origin + "), so the browser offers no camera or " +
        "microphone. " + secure + " Open it as http://localhost:PORT/ or serve it over TLS.";
    }
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "Permission to use the camera and microphone was denied. Allow them for this site in the " +
        "browser's address bar and try again. " + secure;
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No camera or microphone was found (" + (err.message || name) + ").";
    }
    if (name === "NotReadableError" || name === "AbortError") {
      return "The camera or microphone is in use by another program or could not be started (" +
        (err.message || name) + ").";
    }
    return "Could not open the camera and microphone: " + (err && err.message ? err.message : String(err));
  }

  async function openDevices() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const e = new Error("insecure context");
      e.name = "InsecureContext";
      throw e;
    }
    return navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
      video: { width: 640, height: 480 },
    });
  }

  // Capture: the devices (a MediaStream) stay open while capturing; `attach(sendFn, socket)` starts
  // sending frames on one connection (sequence numbers from 0), `detach()` stops sending.
  class Capture {
    constructor(stream, videoEl, onWarn) {
      this.stream = stream;
      this.videoEl = videoEl;
      this.onWarn = onWarn || (() => {});
      this.ctx = null;
      this.node = null;
      this.source = null;
      this.sock = null;
      this.params = Object.assign({}, DEFAULTS);
      this.stats = { audioFrames: 0, audioSamples: 0, videoFrames: 0, videoSkipped: 0, audioDropped: 0,
                     contextRate: null };
      this.canvas = document.createElement("canvas");
      this.canvas.width = VIDEO_W;
      this.canvas.height = VIDEO_H;
      this.g = this.canvas.getContext("2d");
      this.videoTimer = null;
      this.encoding = false;
      this.audioAnchor = null; // [performance.now() ms, context frame]: the audio clock on the wall clock
      this.lastAudioT = null; // t_ms of the last chunk: the stamps only go forward
      this.preroll = []; // [t_ms, Int16Array] captured while not attached
      this.resetSeq();
    }
    resetSeq() {
      this.audioSeq = 0;
      this.videoSeq = 0;
    }

    async startAudio() {
      if (!this.stream.getAudioTracks().length) return;
      const Ctx = window.AudioContext || window.webkitAudioContext;
      this.ctx = new Ctx();
      await this.ctx.audioWorklet.addModule("pcm-worklet.js");
      this.source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, "emostream-pcm", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        processorOptions: { targetRate: this.params.audio_hz, chunk: Math.min(CHUNK_SAMPLES, this.params.max_audio_samples) },
      });
      this.node.port.onmessage = (e) => this.onChunk(e.data);
      this.source.connect(this.node);
      this.node.connect(this.ctx.destination); // the worklet writes silence; connected so it is pulled
      this.stats.contextRate = this.ctx.sampleRate;
      if (this.ctx.state !== "running") {
        try { await this.ctx.resume(); } catch (e) { /* reported below */ }
      }
      if (this.ctx.state !== "running") {
        this.onWarn("audio_suspended", "The browser has not started audio yet: click anywhere on the page to start the microphone.");
        const resume = () => { this.ctx && this.ctx.resume(); };
        document.addEventListener("click", resume, { once: true });
      }
    }

    startVideo() {
      if (!this.stream.getVideoTracks().length) return;
      this.videoEl.srcObject = this.stream;
      this.videoEl.muted = true;
      const p = this.videoEl.play();
      if (p && p.catch) p.catch(() => {});
    }

    async start() {
      this.startVideo();
      await this.startAudio();
    }

    attach(sock, params) {
      this.sock = sock;
      this.params = Object.assign({}, DEFAULTS, params || {});
      this.resetSeq();
      clearInterval(this.videoTimer);
      const fps = this.params.video_fps > 0 ? this.params.video_fps : DEFAULTS.video_fps;
      if (this.stream.getVideoTracks().length) this.videoTimer = setInterval(() => this.grab(), 1000 / fps);
      const pre = this.preroll;
      this.preroll = [];
      if (this.open()) for (const [t, samples] of pre) this.sendAudio(t, samples);
    }
    detach() {
      this.sock = null;
      clearInterval(this.videoTimer);
      this.videoTimer = null;
    }

    open() { return this.sock && this.sock.readyState === WebSocket.OPEN; }

    onChunk(data) {
      const samples = data.samples;
      const now = performance.now();
      // t_ms of the chunk's first sample: anchored on the audio clock (context frames), re-anchored
      // if it drifts from the wall clock by over half a second (after a suspension, say)
      let t = null;
      if (this.audioAnchor) t = this.audioAnchor[0] + (data.frame - this.audioAnchor[1]) / data.rate * 1000;
      const dur = samples.length / this.params.audio_hz * 1000;
      if (t === null || Math.abs(t + dur - now) > 500) {
        t = now - dur;
        this.audioAnchor = [t, data.frame];
      }
      // never backwards: after a stall the worklet delivers a burst, and a re-anchor on the wall
      // clock would put these chunks before ones already stamped
      if (this.lastAudioT !== null && t < this.lastAudioT + dur) {
        t = this.lastAudioT + dur;
        this.audioAnchor = [t, data.frame];
      }
      this.lastAudioT = t;
      if (!this.open()) { // not attached yet (connecting): keep a short pre-roll, sent on attach
        this.preroll.push([t, samples]);
        while (this.preroll.length > PREROLL_CHUNKS) this.preroll.shift();
        return;
      }
      this.sendAudio(t, samples);
    }

    sendAudio(t, samples) {
      if (this.sock.bufferedAmount > MAX_BUFFERED_AUDIO) { this.stats.audioDropped += 1; return; }
      const rate = this.params.audio_hz;
      const max = this.params.max_audio_samples;
      for (let off = 0; off < samples.length; off += max) {
        const part = samples.subarray(off, Math.min(samples.length, off + max));
        this.sock.send(audioFrame(this.audioSeq++, t + off / rate * 1000, rate, part));
        this.stats.audioFrames += 1;
        this.stats.audioSamples += part.length;
      }
    }

    grab() {
      const v = this.videoEl;
      if (!this.open() || v.readyState < 2 || !v.videoWidth) return;
      if (this.encoding || this.sock.bufferedAmount > MAX_BUFFERED) { this.stats.videoSkipped += 1; return; }
      const t = performance.now();
      this.g.drawImage(v, 0, 0, VIDEO_W, VIDEO_H);
      this.encoding = true;
      const sock = this.sock;
      this.canvas.toBlob((blob) => {
        if (!blob) { this.encoding = false; return; }
        blob.arrayBuffer().then((jpeg) => {
          this.encoding = false;
          if (sock !== this.sock || !this.open()) return;
          if (jpeg.byteLength > this.params.max_video_bytes) { this.stats.videoSkipped += 1; return; }
          sock.send(videoFrame(this.videoSeq++, t, VIDEO_W, VIDEO_H, jpeg));
          this.stats.videoFrames += 1;
        }, () => { this.encoding = false; });
      }, "image/jpeg", JPEG_QUALITY);
    }

    stop() {
      this.detach();
      if (this.node) { this.node.port.postMessage("stop"); this.node.disconnect(); this.node = null; }
      if (this.source) { this.source.disconnect(); this.source = null; }
      if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
      for (const track of this.stream.getTracks()) track.stop();
      this.videoEl.srcObject = null;
    }
  }

  window.EmostreamCapture = { Capture, openDevices, explain, audioFrame, videoFrame, HEADER_BYTES,
                              KIND_AUDIO, KIND_VIDEO, DEFAULTS };
})();

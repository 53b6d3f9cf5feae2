// emostream capture: AudioWorklet that turns the microphone into 16 kHz mono int16 chunks.
// Loaded by capture.js with audioContext.audioWorklet.addModule("pcm-worklet.js").
//
// Per 128-frame render quantum: downmix all input channels to mono, low-pass (two cascaded
// biquads, Butterworth-ish, cut-off a little under the target Nyquist) when the context rate is
// above the target, resample by linear interpolation, convert to int16, and post a chunk of
// `chunk` samples ({samples: Int16Array, frame: context frame of the chunk's first sample}).
// All filter and resampler state is kept across quanta, so chunks join without clicks.
"use strict";

class Biquad { // RBJ low-pass, direct form I
  constructor(fs, fc, q) {
    const w = 2 * Math.PI * fc / fs, cos = Math.cos(w), alpha = Math.sin(w) / (2 * q), a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0; this.b1 = (1 - cos) / a0; this.b2 = this.b0;
    this.a1 = -2 * cos / a0; this.a2 = (1 - alpha) / a0;
    this.x1 = 0; this.x2 = 0; this.y1 = 0; this.y2 = 0;
  }
  step(x) {
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
    this.x2 = this.x1; this.x1 = x; this.y2 = this.y1; this.y1 = y;
    return y;
  }
}

class PcmProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.target = opts.targetRate || 16000;
    this.chunk = opts.chunk || 1024;
    this.step = sampleRate / this.target; // input samples per output sample (3 at 48 kHz)
    // two cascaded 2nd-order sections (Q of a 4th-order Butterworth) at 0.45 * target rate
    this.filters = this.step > 1.0001
      ? [new Biquad(sampleRate, 0.45 * this.target, 0.5412), new Biquad(sampleRate, 0.45 * this.target, 1.3066)]
      : [];
    this.pos = 0;        // position of the next output sample, in input samples after the previous quantum's last
    this.prev = 0;       // last filtered input sample of the previous quantum (for interpolation)
    this.havePrev = false;
    this.out = new Int16Array(this.chunk);
    this.n = 0;
    this.outFrame = 0;   // context frame (fractional) of out[0]
    this.running = true;
    this.port.onmessage = (e) => { if (e.data === "stop") this.running = false; };
  }

  emit(v, frame) {
    if (this.n === 0) this.outFrame = frame;
    const s = v < -1 ? -1 : (v > 1 ? 1 : v);
    this.out[this.n++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
    if (this.n === this.chunk) {
      const samples = this.out;
      this.port.postMessage({ samples, frame: this.outFrame, rate: sampleRate }, [samples.buffer]);
      this.out = new Int16Array(this.chunk);
      this.n = 0;
    }
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0 || !input[0]) return true; // no source connected (yet)
    const frames = input[0].length;
    const nch = input.length;
    const block = new Float32Array(frames + 1); // block[0] = last sample of the previous quantum
    block[0] = this.prev;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < nch; c++) x += input[c][i];
      x /= nch;
      for (const f of this.filters) x = f.step(x);
      block[i + 1] = x;
    }
    const start = currentFrame; // context frame of input[0][0]
    if (!this.havePrev) { // the very first quantum: start at its first sample
      this.havePrev = true;
      this.pos = 1;
    }
    // output samples at input positions pos (relative to block[0] = frame start-1), while in range
    while (this.pos <= frames) {
      const i = Math.floor(this.pos), frac = this.pos - i;
      const v = frac === 0 ? block[i] : block[i] + (block[i + 1] - block[i]) * frac;
      this.emit(v, start - 1 + this.pos);
      this.pos += this.step;
    }
    this.pos -= frames;
    this.prev = block[frames];
    return true;
  }
}

registerProcessor("emostream-pcm", PcmProcessor);

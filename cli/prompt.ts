/**
 * Asking on the terminal, as `docker login` does: a line typed on stdin, the question on stderr
 * (stdout carries results only); a secret is not echoed.
 */
import { createInterface } from "node:readline";
import { Writable } from "node:stream";

/** True when there is a person to ask: stdin is a terminal. */
export const canAsk = (): boolean => process.stdin.isTTY === true;

/** One line typed after `question`; with `secret`, what is typed is not shown. */
export async function ask(question: string, secret = false): Promise<string> {
  let muted = false;
  // readline echoes what is typed through `output`: for a secret, that echo is dropped.
  const output = new Writable({
    write(chunk: Buffer, _enc, done) {
      if (!muted) process.stderr.write(chunk);
      done();
    },
  });
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  try {
    // The question is readline's prompt (it redraws the line it is given), written before the mute.
    const answer = new Promise<string>((resolve) => rl.question(question, resolve));
    muted = secret;
    return await answer;
  } finally {
    rl.close();
    if (secret) process.stderr.write("\n");
  }
}

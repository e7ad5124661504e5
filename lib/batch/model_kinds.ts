/**
 * What a checkpoint's head reads, told from its config alone: an enqueuer leaves out the files of
 * other kinds before queueing them, without loading (or, for a Hub id, downloading) the weights.
 * The answer comes from the same function the workers' media input builders take `accepts` from
 * (acceptedMediaKinds in lib/media/model_inputs.ts), given a head made from the config: building
 * a head allocates no weights.
 */
import { AutoModel } from '../auto.js';
import { PerceiverConfig } from '../config.js';
import { configDownload, isHubId, type HubOptions } from '../hub/download.js';
import { acceptedMediaKinds } from '../media/model_inputs.js';
import type { MediaKind } from '../media/kinds.js';

/** The media kinds the head of `model` (a checkpoint folder or a Hugging Face Hub id) reads, and its config. */
export async function checkpointMediaKinds(model: string, hub: HubOptions = {}): Promise<{ accepts: readonly MediaKind[]; config: PerceiverConfig }> {
  const folder = isHubId(model) ? await configDownload(model, hub) : model;
  const config = await PerceiverConfig.fromPretrained(folder);
  const Head = AutoModel.headFor(config);
  return { accepts: acceptedMediaKinds(new Head(config)), config };
}

export { MongoBackend, normaliseUrl, type MongoBackendOptions } from './mongo-backend.js';
export {
  DEFAULT_RESULTS_EXPIRE_IN,
  bsonToWire,
  documentToGroupMeta,
  documentToState,
  effectiveExpireIn,
  groupMetaToDocument,
  isExpired,
  resultsFromBson,
  resultsToBson,
  stateToDocument,
} from './documents.js';

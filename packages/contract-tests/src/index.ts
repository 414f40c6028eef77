/**
 * The contract suite: written once, run unchanged against every adapter. Each
 * function takes a factory that connects to the server under test (two calls of the
 * factory must behave like two processes sharing that server) and declared switches.
 */
export { brokerContract, collectDeliveries, type BrokerContractOptions } from './broker-contract.js';
export { backendContract, type BackendContractOptions } from './backend-contract.js';
export { lockContract, type LockContractOptions } from './lock-contract.js';

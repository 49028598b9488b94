const H=await import('/work/wt/fs-xfs-fat-iso/packages/disk/dist/test/fuzz-harness.js');
const F=await import('/work/wt/fs-xfs-fat-iso/packages/disk/dist/test/fuzz-filesystems.js');
import {mkdtempSync} from 'node:fs';
const seeds=F.makeFilesystemSeeds(mkdtempSync('/tmp/fzs-'));
for (const [i,s] of seeds.entries()){
  const t=Date.now(); const c=process.cpuUsage();
  const r=await H.fuzzSeed(s,{runs:Number(process.argv[2]??50),rngSeed:2000+i,hot:s.hot,exercise:(b)=>F.exerciseFilesystem(s.filesystem,b)});
  const u=process.cpuUsage(c);
  console.log(s.name, r.runs, Date.now()-t,'ms wall', Math.round(u.user/1000),'ms user', r.failure?.slice(0,1500)??'');
}
